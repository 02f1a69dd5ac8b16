"""xlrec ranking: candidate generation, online-learned scoring and evaluation (no Kafka here)."""
