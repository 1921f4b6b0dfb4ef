"""What runs exported models: devices, the engine driver, streaming, teachers."""
