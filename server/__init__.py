"""The server side: teachers, AMS sessions (selection, rates, training) and Just-In-Time distillation."""
