# One image for every sysmail process; the command picks the process.
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1
WORKDIR /app

COPY pyproject.toml requirements.lock README.md ./
COPY cli cli
COPY config config
COPY migrations migrations
COPY services services
COPY shared shared
COPY workers workers
RUN pip install --no-cache-dir -c requirements.lock . \
    && useradd --system --uid 10001 sysmail
USER sysmail

EXPOSE 8025
ENTRYPOINT ["sysmail"]
CMD ["run"]
