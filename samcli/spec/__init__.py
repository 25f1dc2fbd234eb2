"""Typed, torch-free descriptions at the bottom of the house: what a measurement is (measure.py) and
what each method is (methods.py). Everything above validates through these, never around them."""
