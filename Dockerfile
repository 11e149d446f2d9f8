FROM python:3.11-slim
WORKDIR /app
ENV PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 CAPPROF_DATA_DIR=/var/lib/capprof
# Production by default: the service refuses to start until CAPPROF_ADMIN_KEY holds a strong key.
ENV CAPPROF_ENVIRONMENT=production
RUN pip install --no-cache-dir "torch==2.13.0"
COPY pyproject.toml README.md alembic.ini ./
COPY profiling ./profiling
COPY service ./service
COPY migrations ./migrations
RUN pip install --no-cache-dir -e .
EXPOSE 8000
CMD ["sh", "-c", "capprof db upgrade && capprof serve --host 0.0.0.0 --port 8000"]
