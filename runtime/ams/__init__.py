"""Adaptive Model Streaming (AMS) and Just-In-Time online distillation: the server side, the wire
format of sparse updates, and the stream loop that drives both against a device."""
