"""Integration drivers: adaptive Runge–Kutta (torchdiffeq), implicit (scipy), batched dopri5, Filippov."""
