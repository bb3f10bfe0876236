"""Tests of the test doubles themselves (the fake provider), kept apart from the product's tests."""
