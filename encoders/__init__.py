"""xlrec encoders: multilingual text encoder sources, ONNX export and inference."""
