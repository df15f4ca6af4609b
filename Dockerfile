# kv-storage service image.
#   docker build -t kv-storage .
#   docker run --rm -e KV_STORAGE_ELASTICSEARCH_URI=http://es:9200 kv-storage kv-storage init
#   docker run -p 8080:8080 -e KV_STORAGE_ELASTICSEARCH_URI=http://es:9200 kv-storage
#   or mount a configuration file:
#   docker run -p 8080:8080 -v $PWD/kv-storage.toml:/etc/kv-storage/kv-storage.toml:ro \
#              -e KV_STORAGE_CONFIG=/etc/kv-storage/kv-storage.toml kv-storage
# Secrets can be mounted files: -e KV_STORAGE_ELASTICSEARCH_AUTH_PASSWORD_FILE=/run/secrets/es.
# BASE_IMAGE lets the tests build on a stand-in where registries cannot be reached.

ARG BASE_IMAGE=python:3.12-slim

FROM ${BASE_IMAGE} AS build
WORKDIR /src
COPY pyproject.toml README.md ./
COPY kv_storage ./kv_storage
COPY pipeline ./pipeline
COPY schemas ./schemas
COPY kv_storage_client ./kv_storage_client
COPY elasticsearch ./elasticsearch
RUN pip wheel --no-cache-dir --wheel-dir /wheels .

FROM ${BASE_IMAGE}
ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1
RUN useradd --system --uid 10001 --no-create-home --shell /usr/sbin/nologin kvstorage
COPY --from=build /wheels /wheels
RUN pip install --no-cache-dir --no-index --find-links /wheels kv-storage \
 && rm -rf /wheels
# init.sh and the definitions it reads, for operators who prefer the shell script.
COPY elasticsearch /opt/kv-storage/elasticsearch
USER kvstorage
EXPOSE 8080
# kv-storage healthcheck reads the configuration serve reads: it asks the configured port and
# scheme (server.port, server.tls.*), not a fixed 8080.
HEALTHCHECK --interval=30s --timeout=5s --start-period=10s --retries=3 \
    CMD ["kv-storage", "healthcheck"]
# SIGTERM (what `docker stop` sends) makes serve finish its requests and write its history.
STOPSIGNAL SIGTERM
CMD ["kv-storage", "serve"]
