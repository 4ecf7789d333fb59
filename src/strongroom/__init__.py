"""Strongroom: a credential store. `import strongroom as dr` gives the SDK with DataRobot's Credential surface."""
__version__ = "0.1.0"
