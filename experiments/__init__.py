"""Experiments that drive a server and a device together (the simulated AMS/JIT stream)."""
