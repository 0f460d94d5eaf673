"""Settings modules: base (shared), local (zero-setup default), test, production.

Chosen with DJANGO_SETTINGS_MODULE; every value that differs between machines comes from the
environment (see README, "Configuration").
"""
