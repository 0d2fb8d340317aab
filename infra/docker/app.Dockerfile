# The Python side: generator, trainer, serving replica (one image, a command each).
FROM python:3.11-slim
COPY . /opt/streamtrain
RUN pip install --no-cache-dir /opt/streamtrain
WORKDIR /opt/streamtrain
ENTRYPOINT ["streamtrain"]
