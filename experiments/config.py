"""What one `mobdistill stream` run is: `StreamConfig` and the paper's clock it scales."""

from __future__ import annotations

from dataclasses import dataclass

from mobdistill.contract import uplink
from mobdistill.errors import UsageError
from mobdistill.experiments.pretrain import PRETRAIN_CLIPS

SCHEMES = ("none", "one-time", "remote-tracking", "jit", "ams")
DEFAULT_VIDEOS = ("carphone_pristine.mp4", "bikes.mp4", "carphone_distorted.mp4")
# AMS §4.1: T_update 10 s, T_horizon 240 s, δt (ASR/ATR interval) 10 s, K = 20.
PAPER_T_UPDATE_S, PAPER_T_HORIZON_S, PAPER_DELTA_T_S, PAPER_ITERATIONS = 10.0, 240.0, 10.0, 20
# One-Time (§4.1): the whole model fine-tuned once on the first 60 s. Remote+Tracking: teacher
# labels of samples at AMS's maximum sampling rate (1 fps) of the video's own time.
PAPER_ONE_TIME_S, PAPER_TRACKING_FPS = 60.0, 1.0


@dataclass(frozen=True)
class StreamConfig:
    """One stream run. Times are video seconds; ``time_scale`` maps AMS's clock onto the short
    real stream (T_update = 10 s·scale, T_horizon = 240 s·scale, δt = 10 s·scale, ASR rates
    / scale). JIT's δ counts real frames and is not scaled. ``link_mbps`` None: no link cap (the
    papers measured without one). ``iterations`` is K (the paper's 20; fewer only to go faster)."""

    scheme: str = "ams"
    videos: tuple[str, ...] = DEFAULT_VIDEOS
    max_frames_per_clip: int | None = None
    teacher: str = "selfie"
    teacher_classes: tuple[str, ...] = ("background", "person")
    teacher_activation: str | None = None
    model: str = "deeplab"
    resolution: tuple[int, int] = (96, 192)
    aspp_channels: int = 256  # DeepLab's ASPP width
    width_multiplier: float = 0.5  # JITNet's m
    time_scale: float = 0.2
    t_update_s: float | None = None
    t_horizon_s: float | None = None
    gamma: float = 0.05
    iterations: int = PAPER_ITERATIONS
    batch_size: int = 4
    lr: float = 1e-3
    selection: str = "paper"
    value_coding: str = "f16"
    delta_scope: str = "all"
    jit_threshold: float = 0.8
    # JITNet's loss weight inside the teacher's boxes (dilated 15 %); 1: plain cross-entropy
    jit_box_weight: float = 1.0
    # JIT with the teacher on the device's machine (JITNet's own setting): nothing crosses a
    # link, the teacher sees the raw frame and each update applies from its own frame on
    colocated: bool = False
    uplink_codec: str = "h264"
    uplink_kbps: float = uplink.DEFAULT_BITRATE_KBPS
    link_mbps: float | None = None
    server_speedup: float = 10.0
    pretrain_clips: tuple[str, ...] = PRETRAIN_CLIPS
    pretrain_iterations: int = 1500
    pretrain_seed: int | None = None  # None: `seed` (each seed its own starting point)
    # every n-th pretraining frame is labelled and trained on; every n-th held-out frame scores
    # the start (fewer frames for a slow teacher: IS-Net takes ~5 CPU-s a frame)
    pretrain_frame_step: int = 2
    pretrain_heldout_step: int = 10
    num_threads: int = 2
    realtime: bool = False
    # Each packet applied before its arrival frame runs (engine --update_blocking): model versions
    # per frame follow the simulated clock alone, not how fast this host builds the new model.
    update_blocking: bool = False
    insecure_updates: bool = False
    seed: int = 0

    def __post_init__(self) -> None:
        if self.scheme not in SCHEMES:
            raise UsageError(f"--scheme {self.scheme!r} must be one of {', '.join(SCHEMES)}")
        if self.time_scale <= 0:
            raise UsageError(f"--time-scale {self.time_scale} must be positive")
        if self.colocated and self.scheme != "jit":
            raise UsageError("--colocated is JIT's setting (--scheme jit)")
        if self.link_mbps is not None and self.link_mbps <= 0:
            raise UsageError(f"--link-mbps {self.link_mbps} must be positive (omit it: no cap)")

    @property
    def update_interval_s(self) -> float:
        return self.t_update_s if self.t_update_s else PAPER_T_UPDATE_S * self.time_scale

    @property
    def pretrain_clip(self) -> str:
        """The first pretraining clip (its first frames hold both classes)."""
        return self.pretrain_clips[0]

    @property
    def one_time_s(self) -> float:
        return PAPER_ONE_TIME_S * self.time_scale

    @property
    def one_time_iterations(self) -> int:
        """As many steps as AMS takes in the same 60 s (six phases of K)."""
        return round(PAPER_ONE_TIME_S / PAPER_T_UPDATE_S) * self.iterations

    @property
    def tracking_fps(self) -> float:
        """Remote+Tracking's sampling rate in frames per second of video time, not scaled: how
        far the flow must carry a label depends on how much the scene moves between samples,
        which is the video's own motion per real second (time_scale compresses only the
        server's clock: T_update, T_horizon, δt, the first 60 s)."""
        return PAPER_TRACKING_FPS

    @property
    def horizon_s(self) -> float:
        return self.t_horizon_s if self.t_horizon_s else PAPER_T_HORIZON_S * self.time_scale

    @property
    def asr_interval_s(self) -> float:
        """δt on the stream clock; follows an explicit T_update so that, as in the paper, the
        rates are evaluated as often as the (non-hibernating) server trains."""
        return self.t_update_s if self.t_update_s else PAPER_DELTA_T_S * self.time_scale
