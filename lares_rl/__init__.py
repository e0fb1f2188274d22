"""lares_rl: sequential recommendation with latent reasoning (LARES), SPT then ranking-reward RPT.

Kept import-light on purpose: ``import lares_rl.envs`` must not pull in the trainers.
"""

__version__ = "0.1.0"
