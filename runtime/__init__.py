"""The device side: devices (host, ADB), the engine driver, profiles, sweeps, the update decoder."""
