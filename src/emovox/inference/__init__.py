"""The inference engine shared by every front (Recognizer, ONNX, timeline, stream, server).

Its modules import no training, corpus or experiment code, and nothing heavy at import
time, so a front that needs only ONNX Runtime stays free of torch and scikit-learn.
"""
