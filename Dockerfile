# roomrelay: the server, its bundled page, the socket.io-client bundle and the page's
# background-blur model it serves.
# Build: docker build -t roomrelay .   Run: see docker-compose.yml and README "Deploying".

# The browser packages, from the locked npm packages (no build step, no dev packages).
FROM node:20-slim AS client
WORKDIR /build
COPY package.json package-lock.json ./
RUN npm ci --omit=dev --ignore-scripts --no-audit --no-fund

FROM python:3.11-slim
ENV PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1
WORKDIR /app
COPY setup.cfg pyproject.toml README.md ./
COPY server ./server
RUN pip install . && rm -rf build server/*.egg-info
COPY static ./static
COPY --from=client /build/node_modules/socket.io-client/dist ./socket.io-client
COPY --from=client /build/node_modules/@mediapipe/selfie_segmentation ./selfie_segmentation
RUN useradd --system --home-dir /app --shell /usr/sbin/nologin roomrelay \
    && mkdir /recordings && chown roomrelay /recordings
USER roomrelay
# The installed package cannot find these next to itself: name them.
ENV HOST=0.0.0.0 \
    PORT=8000 \
    LOG_FORMAT=json \
    STATIC_DIR=/app/static \
    SOCKETIO_CLIENT_DIR=/app/socket.io-client \
    SEGMENTATION_DIR=/app/selfie_segmentation
EXPOSE 8000
HEALTHCHECK --interval=30s --timeout=5s \
    CMD python -c "import urllib.request; urllib.request.urlopen('http://127.0.0.1:8000/health', timeout=3)"
# SIGTERM (docker stop) drains: clients are told, recordings are finalized.
STOPSIGNAL SIGTERM
CMD ["roomrelay"]
