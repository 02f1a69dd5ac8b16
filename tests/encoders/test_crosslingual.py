"""Cross-lingual retrieval: translations of one sentence must land closer to each other than
to any unrelated sentence, in every language. Sentences written for this test."""

from __future__ import annotations

import numpy as np

from encoders.onnx_encoder import OnnxEncoder

LANGS = ("en", "de", "fr", "es", "ru", "zh", "ja", "ko")

PARALLEL = [
    ("The cat is sleeping on the warm windowsill.",
     "Die Katze schläft auf der warmen Fensterbank.",
     "Le chat dort sur le rebord de fenêtre chaud.",
     "El gato duerme en el alféizar cálido de la ventana.",
     "Кошка спит на тёплом подоконнике.",
     "猫在温暖的窗台上睡觉。",
     "猫が暖かい窓辺で寝ている。",
     "고양이가 따뜻한 창턱에서 자고 있다."),
    ("I forgot my umbrella and got soaked in the rain.",
     "Ich habe meinen Regenschirm vergessen und bin im Regen klatschnass geworden.",
     "J'ai oublié mon parapluie et j'ai été trempé par la pluie.",
     "Olvidé mi paraguas y me empapé con la lluvia.",
     "Я забыл зонт и промок под дождём.",
     "我忘了带伞，被雨淋透了。",
     "傘を忘れて雨でびしょ濡れになった。",
     "우산을 잊어버려서 비에 흠뻑 젖었다."),
    ("The train to Berlin leaves at eight in the morning.",
     "Der Zug nach Berlin fährt um acht Uhr morgens ab.",
     "Le train pour Berlin part à huit heures du matin.",
     "El tren a Berlín sale a las ocho de la mañana.",
     "Поезд в Берлин отправляется в восемь утра.",
     "去柏林的火车早上八点出发。",
     "ベルリン行きの列車は朝八時に出発する。",
     "베를린행 기차는 아침 여덟 시에 출발한다."),
    ("This game has beautiful graphics but the controls are terrible.",
     "Dieses Spiel hat eine wunderschöne Grafik, aber die Steuerung ist furchtbar.",
     "Ce jeu a de superbes graphismes mais les commandes sont horribles.",
     "Este juego tiene gráficos preciosos, pero los controles son horribles.",
     "У этой игры красивая графика, но ужасное управление.",
     "这款游戏画面很美，但操作太糟糕了。",
     "このゲームはグラフィックが美しいが、操作性はひどい。",
     "이 게임은 그래픽이 아름답지만 조작감이 최악이다."),
    ("My grandmother bakes apple pie every Sunday.",
     "Meine Großmutter backt jeden Sonntag Apfelkuchen.",
     "Ma grand-mère fait une tarte aux pommes tous les dimanches.",
     "Mi abuela hornea tarta de manzana todos los domingos.",
     "Моя бабушка каждое воскресенье печёт яблочный пирог.",
     "我奶奶每个星期天都烤苹果派。",
     "祖母は毎週日曜日にアップルパイを焼く。",
     "할머니는 일요일마다 사과 파이를 굽는다."),
    ("The doctor prescribed antibiotics for my ear infection.",
     "Der Arzt hat mir Antibiotika gegen meine Ohrenentzündung verschrieben.",
     "Le médecin m'a prescrit des antibiotiques pour mon otite.",
     "El médico me recetó antibióticos para la infección de oído.",
     "Врач прописал мне антибиотики от воспаления уха.",
     "医生给我开了治疗耳朵感染的抗生素。",
     "医者は耳の感染症のために抗生物質を処方した。",
     "의사가 귀 감염 때문에 항생제를 처방해 주었다."),
    ("The stock market fell sharply after the announcement.",
     "Der Aktienmarkt ist nach der Ankündigung stark gefallen.",
     "La bourse a fortement chuté après l'annonce.",
     "La bolsa cayó bruscamente tras el anuncio.",
     "После объявления фондовый рынок резко упал.",
     "公告发布后股市大幅下跌。",
     "発表の後、株式市場は急落した。",
     "발표 이후 주식 시장이 급락했다."),
    ("Our football team won the championship last night.",
     "Unsere Fußballmannschaft hat gestern Abend die Meisterschaft gewonnen.",
     "Notre équipe de football a remporté le championnat hier soir.",
     "Nuestro equipo de fútbol ganó el campeonato anoche.",
     "Наша футбольная команда вчера вечером выиграла чемпионат.",
     "我们的足球队昨晚赢得了冠军。",
     "私たちのサッカーチームは昨夜優勝した。",
     "우리 축구팀이 어젯밤 우승했다."),
    ("The police arrested a thief who broke into the jewelry store.",
     "Die Polizei hat einen Dieb festgenommen, der in das Juweliergeschäft eingebrochen war.",
     "La police a arrêté un voleur qui s'était introduit dans la bijouterie.",
     "La policía detuvo a un ladrón que había entrado a robar en la joyería.",
     "Полиция арестовала вора, который проник в ювелирный магазин.",
     "警察逮捕了一名闯入珠宝店的小偷。",
     "警察は宝石店に押し入った泥棒を逮捕した。",
     "경찰이 보석 가게에 침입한 도둑을 체포했다."),
    ("The factory will hire two hundred new workers next year.",
     "Die Fabrik wird im nächsten Jahr zweihundert neue Arbeiter einstellen.",
     "L'usine va embaucher deux cents nouveaux ouvriers l'année prochaine.",
     "La fábrica contratará a doscientos trabajadores nuevos el próximo año.",
     "В следующем году завод наймёт двести новых рабочих.",
     "这家工厂明年将招聘两百名新工人。",
     "その工場は来年、新たに二百人の労働者を雇う。",
     "그 공장은 내년에 새 근로자 이백 명을 고용할 것이다."),
    ("I am learning to play the piano in the evenings.",
     "Ich lerne abends Klavier spielen.",
     "J'apprends à jouer du piano le soir.",
     "Estoy aprendiendo a tocar el piano por las tardes.",
     "По вечерам я учусь играть на пианино.",
     "我晚上在学弹钢琴。",
     "私は夜にピアノを習っている。",
     "나는 저녁마다 피아노를 배우고 있다."),
    ("The new smartphone's battery lasts two full days.",
     "Der Akku des neuen Smartphones hält zwei volle Tage.",
     "La batterie du nouveau smartphone tient deux jours entiers.",
     "La batería del nuevo teléfono inteligente dura dos días completos.",
     "Аккумулятор нового смартфона держит два полных дня.",
     "新智能手机的电池能用整整两天。",
     "新しいスマートフォンのバッテリーは丸二日もつ。",
     "새 스마트폰의 배터리는 꼬박 이틀 동안 간다."),
    ("The baby took her first steps at ten months old.",
     "Das Baby hat mit zehn Monaten seine ersten Schritte gemacht.",
     "Le bébé a fait ses premiers pas à dix mois.",
     "La bebé dio sus primeros pasos a los diez meses.",
     "Малышка сделала первые шаги в десять месяцев.",
     "宝宝十个月大时迈出了第一步。",
     "赤ちゃんは生後十か月で初めて歩いた。",
     "아기는 생후 열 달에 첫걸음을 뗐다."),
    ("He lost his wallet on the bus yesterday.",
     "Er hat gestern im Bus seine Brieftasche verloren.",
     "Il a perdu son portefeuille dans le bus hier.",
     "Ayer perdió su cartera en el autobús.",
     "Вчера он потерял кошелёк в автобусе.",
     "他昨天在公交车上丢了钱包。",
     "彼は昨日バスで財布をなくした。",
     "그는 어제 버스에서 지갑을 잃어버렸다."),
    ("The museum is closed on Mondays.",
     "Das Museum ist montags geschlossen.",
     "Le musée est fermé le lundi.",
     "El museo cierra los lunes.",
     "По понедельникам музей закрыт.",
     "博物馆周一闭馆。",
     "博物館は月曜日が休館です。",
     "박물관은 월요일에 문을 닫는다."),
    ("Citizens are voting today to elect a new president.",
     "Die Bürger wählen heute einen neuen Präsidenten.",
     "Les citoyens votent aujourd'hui pour élire un nouveau président.",
     "Los ciudadanos votan hoy para elegir a un nuevo presidente.",
     "Сегодня граждане голосуют, чтобы избрать нового президента.",
     "公民们今天投票选举新总统。",
     "市民は今日、新しい大統領を選ぶために投票する。",
     "시민들은 오늘 새 대통령을 뽑기 위해 투표한다."),
    ("The server crashed and all players were disconnected.",
     "Der Server ist abgestürzt und alle Spieler wurden getrennt.",
     "Le serveur a planté et tous les joueurs ont été déconnectés.",
     "El servidor se cayó y todos los jugadores fueron desconectados.",
     "Сервер упал, и все игроки были отключены.",
     "服务器崩溃了，所有玩家都掉线了。",
     "サーバーがダウンして、全プレイヤーの接続が切れた。",
     "서버가 다운되어 모든 플레이어의 접속이 끊겼다."),
    ("She planted roses and tulips in her garden.",
     "Sie hat Rosen und Tulpen in ihrem Garten gepflanzt.",
     "Elle a planté des roses et des tulipes dans son jardin.",
     "Ella plantó rosas y tulipanes en su jardín.",
     "Она посадила в своём саду розы и тюльпаны.",
     "她在花园里种了玫瑰和郁金香。",
     "彼女は庭にバラとチューリップを植えた。",
     "그녀는 정원에 장미와 튤립을 심었다."),
    ("The wedding took place in a small church by the lake.",
     "Die Hochzeit fand in einer kleinen Kirche am See statt.",
     "Le mariage a eu lieu dans une petite église au bord du lac.",
     "La boda se celebró en una pequeña iglesia junto al lago.",
     "Свадьба прошла в маленькой церкви у озера.",
     "婚礼在湖边的一座小教堂里举行。",
     "結婚式は湖のそばの小さな教会で行われた。",
     "결혼식은 호숫가의 작은 교회에서 열렸다."),
    ("The library has thousands of old books about history.",
     "Die Bibliothek hat Tausende alter Bücher über Geschichte.",
     "La bibliothèque possède des milliers de vieux livres d'histoire.",
     "La biblioteca tiene miles de libros antiguos sobre historia.",
     "В библиотеке тысячи старых книг по истории.",
     "图书馆里有成千上万本关于历史的旧书。",
     "その図書館には歴史に関する古い本が何千冊もある。",
     "도서관에는 역사에 관한 오래된 책이 수천 권 있다."),
    ("My brother repairs old cars in his garage.",
     "Mein Bruder repariert in seiner Garage alte Autos.",
     "Mon frère répare de vieilles voitures dans son garage.",
     "Mi hermano repara coches viejos en su garaje.",
     "Мой брат ремонтирует старые машины в своём гараже.",
     "我哥哥在他的车库里修理旧汽车。",
     "兄はガレージで古い車を修理している。",
     "우리 형은 차고에서 오래된 자동차를 수리한다."),
    ("Astronomers discovered a new planet orbiting a distant star.",
     "Astronomen haben einen neuen Planeten entdeckt, der einen fernen Stern umkreist.",
     "Des astronomes ont découvert une nouvelle planète en orbite autour d'une étoile lointaine.",
     "Los astrónomos descubrieron un nuevo planeta que orbita una estrella lejana.",
     "Астрономы открыли новую планету, вращающуюся вокруг далёкой звезды.",
     "天文学家发现了一颗围绕遥远恒星运行的新行星。",
     "天文学者たちは遠い恒星を回る新しい惑星を発見した。",
     "천문학자들이 먼 별 주위를 도는 새로운 행성을 발견했다."),
    ("The teacher gave us a difficult math exam.",
     "Der Lehrer hat uns eine schwierige Mathearbeit gegeben.",
     "Le professeur nous a donné un examen de mathématiques difficile.",
     "El profesor nos puso un examen de matemáticas difícil.",
     "Учитель дал нам трудную контрольную по математике.",
     "老师给了我们一份很难的数学试卷。",
     "先生は私たちに難しい数学の試験を出した。",
     "선생님이 우리에게 어려운 수학 시험을 냈다."),
    ("The hotel room had a wonderful view of the sea.",
     "Das Hotelzimmer hatte einen wunderbaren Blick aufs Meer.",
     "La chambre d'hôtel avait une vue magnifique sur la mer.",
     "La habitación del hotel tenía una vista maravillosa al mar.",
     "Из гостиничного номера открывался чудесный вид на море.",
     "酒店房间可以看到美丽的海景。",
     "ホテルの部屋からは海の素晴らしい景色が見えた。",
     "호텔 방에서 바다가 멋지게 내려다보였다."),
]


def retrieved(vectors: np.ndarray, groups: np.ndarray, langs: np.ndarray) -> np.ndarray:
    """Per sentence: searched against the sentences of each other language, does its
    translation score above every unrelated sentence of that language, for every language?

    Retrieval is per target language (as in bitext mining) because a small multilingual
    model also clusters by language: an unrelated French sentence can sit closer to a French
    query than the query's Korean translation, so one pool of all languages would measure
    that language bias rather than cross-lingual retrieval.
    """
    sims = vectors @ vectors.T
    ok = np.ones(len(vectors), dtype=bool)
    for lang in np.unique(langs):
        target = langs == lang
        translation = np.where(target[None, :] & (groups[:, None] == groups[None, :]), sims, np.inf).min(axis=1)
        unrelated = np.where(target[None, :] & (groups[:, None] != groups[None, :]), sims, -np.inf).max(axis=1)
        ok &= (langs == lang) | (translation > unrelated)
    return ok


def test_test_data_is_what_the_issue_asks() -> None:
    assert len(PARALLEL) >= 20
    assert all(len(group) == len(LANGS) for group in PARALLEL)
    assert len(LANGS) >= 6
    flat = [s for group in PARALLEL for s in group]
    assert len(set(flat)) == len(flat)


def test_retrieved_helper_on_a_toy_space() -> None:
    # two sentences (groups 0, 1) in two languages (a, b)
    langs = np.array([0, 0, 1, 1])
    groups = np.array([0, 1, 0, 1])
    aligned = np.array([[1, 0], [0, 1], [0.9, 0.1], [0.1, 0.9]], dtype=np.float32)
    assert retrieved(aligned, groups, langs).all()
    swapped = aligned[[0, 1, 3, 2]]
    assert not retrieved(swapped, groups, langs).any()


def test_translations_rank_above_unrelated_sentences(int8_encoder: OnnxEncoder) -> None:
    texts = [s for group in PARALLEL for s in group]
    groups = np.repeat(np.arange(len(PARALLEL)), len(LANGS))
    langs = np.tile(np.arange(len(LANGS)), len(PARALLEL))
    ok = retrieved(int8_encoder.encode(texts), groups, langs)
    failures = [texts[i] for i in np.flatnonzero(~ok)]
    assert ok.mean() >= 0.95, f"{ok.mean():.1%} retrieved every translation; failures: {failures}"
