"""skim: token-skimming Transformers (Block-Skim, Transkimmer) as a Lightning + Hydra framework."""

__version__ = "0.1.0"

from skim.utils import resolvers as _resolvers  # noqa: F401  (registers OmegaConf resolvers)
