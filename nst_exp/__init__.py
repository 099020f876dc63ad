"""nst_exp: configuration-driven neural style transfer experiments (Gatys et al.)."""

from nst_exp.errors import NstError

__all__ = ["NstError"]
__version__ = "0.1.0"
