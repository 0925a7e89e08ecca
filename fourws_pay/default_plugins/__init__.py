"""Plugins shipped inside fourws-pay and registered by default."""
