"""rait: refusal-aware instruction tuning (CRaFT, GRAIT and their baselines)."""

__version__ = "0.1.0"
