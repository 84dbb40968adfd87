"""The shared training floor: run folders, the per-scene optimisation loop every method runs on, and
the network trainer (accelerate, EMA, time box) that takes any batch source."""
