# kv-storage service image.
#   docker build -t kv-storage .
#   docker run -p 8080:8080 -e KV_STORAGE_ELASTICSEARCH_URI=http://es:9200 kv-storage
#   or mount a configuration file:
#   docker run -p 8080:8080 -v $PWD/kv-storage.toml:/etc/kv-storage/kv-storage.toml:ro \
#              -e KV_STORAGE_CONFIG=/etc/kv-storage/kv-storage.toml kv-storage

FROM python:3.12-slim AS build
WORKDIR /src
COPY pyproject.toml README.md ./
COPY kv_storage ./kv_storage
COPY pipeline ./pipeline
COPY schemas ./schemas
COPY elasticsearch ./elasticsearch
RUN pip wheel --no-cache-dir --wheel-dir /wheels .

FROM python:3.12-slim
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
HEALTHCHECK --interval=30s --timeout=5s --start-period=10s --retries=3 \
    CMD ["python", "-c", "import urllib.request; urllib.request.urlopen('http://127.0.0.1:8080/health', timeout=4)"]
CMD ["kv-storage", "serve"]
