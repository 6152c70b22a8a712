"""gantry: a job service that trains and samples GANs on GPU workers."""

__version__ = "0.1.0"
