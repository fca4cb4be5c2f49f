"""Onboarding: server specs in, a probed, classified, recorded gateway config out (`simgate onboard`)."""
