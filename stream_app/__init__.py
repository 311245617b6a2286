"""fraudstream: real-time card-fraud detection over Kafka, Redis and ONNX Runtime."""

__version__ = "0.1.0"
