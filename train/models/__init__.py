"""Generators and discriminator."""
