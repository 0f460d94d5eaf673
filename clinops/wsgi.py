"""WSGI entry point (gunicorn clinops.wsgi)."""
import os

from django.core.wsgi import get_wsgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "clinops.settings.local")
application = get_wsgi_application()
