"""Confirmation: a measured regression fails only when fresh processes, spaced apart in time, all find it."""
