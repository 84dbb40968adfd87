"""Evaluation: image metrics and, with the world classifier, prompt fidelity."""
