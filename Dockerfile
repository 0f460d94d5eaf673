# ClinOps production image: one image for web (gunicorn), worker and beat (celery) and migrate.
# Build: docker build -t clinops:$(git rev-parse --short HEAD) .   Run: see compose.yaml and
# docs/production.md. Every runtime requirement installs from a manylinux wheel: no compiler needed.
FROM python:3.11-slim-bookworm

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    DJANGO_SETTINGS_MODULE=clinops.settings.production \
    CLINOPS_VAR_DIR=/app/var \
    CLINOPS_RECORDINGS_DIR=/app/data/recordings

RUN groupadd --system --gid 10001 clinops \
    && useradd --system --uid 10001 --gid clinops --home-dir /app --no-create-home --shell /usr/sbin/nologin clinops

WORKDIR /app
COPY requirements.txt ./
RUN pip install -r requirements.txt

# The code and the shipped recordings (data/recordings: BP model training and evaluation), owned by
# root and read-only for the application user.
COPY . .

# Static files are collected into the image, so each web container serves them (whitenoise) with no
# shared volume. Production settings refuse to load without these variables; the values here are
# throwaway ones for this one command and are not kept in the image.
RUN SECRET_KEY="$(python -c 'import secrets; print(secrets.token_urlsafe(64))')" \
    ALLOWED_HOSTS=build.invalid \
    DATABASE_URL=postgres://build@build.invalid:5432/build \
    REDIS_URL=redis://build.invalid:6379/0 \
    python manage.py collectstatic --noinput \
    && python -m compileall -q clinops monitoring patients therapy \
    && chown -R clinops:clinops /app/var

USER clinops
EXPOSE 8000
CMD ["gunicorn", "clinops.wsgi", "--bind", "0.0.0.0:8000"]
