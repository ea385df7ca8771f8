"""Emotion recognition in photos and videos, importable without torch: ONNX models need only onnxruntime.

>>> from fer_lightning.deploy import EmotionRecognizer
"""

from fer_lightning.deploy.recognizer import EmotionRecognizer, FaceResult

__all__ = ["EmotionRecognizer", "FaceResult"]
