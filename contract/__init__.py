"""What the device side and the server side share: the sparse-update wire format and the
uplink codec."""
