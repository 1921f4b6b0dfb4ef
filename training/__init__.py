"""The seeds' training systems: MobileVOS's distillation loss (seed 002) and its trainer, Delta
Distillation (seed 003). Server side: imports models, export and the teachers, never runtime."""
