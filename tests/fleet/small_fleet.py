"""What a fleet test's actors build in their own processes: sessions on the small student of
tests/streaming (no export). The test pickles this module by value for the actors."""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "streaming"))
import small_student  # noqa: E402

from mobdistill.server.session import ServerConfig, Session, UpdateCredentials  # noqa: E402
from mobdistill.server.session_host import SessionFactory  # noqa: E402

RESOLUTION = (12, 16)
SLOW_DEVICE = bytes([0xFF]) * 16  # its phases run long enough to be killed in the middle


def build() -> SessionFactory:
    model, teacher = small_student.student(), small_student.teacher()
    manifest = small_student.manifest(model)

    def factory(device: bytes, key: bytes | None) -> Session:
        return Session(device.hex(), model, manifest, teacher,
                       ServerConfig(iterations=600 if device == SLOW_DEVICE else 3,
                                    batch_size=2, lr=1e-2, gamma=0.2,
                                    update_interval_s=1.0, asr_interval_s=1.0),
                       credentials=UpdateCredentials(device, key))

    return factory
