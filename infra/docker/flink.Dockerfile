# Flink 2.2 with Python (PyFlink workers) and the Kafka connector on the classpath.
FROM flink:2.2.1-scala_2.12-java17
RUN apt-get update && apt-get install -y --no-install-recommends python3 python3-pip python3-venv \
    && rm -rf /var/lib/apt/lists/* && ln -sf /usr/bin/python3 /usr/bin/python
ADD https://repo.maven.apache.org/maven2/org/apache/flink/flink-sql-connector-kafka/5.0.0-2.2/flink-sql-connector-kafka-5.0.0-2.2.jar /opt/flink/lib/
COPY . /opt/streamtrain
RUN pip3 install --no-cache-dir --break-system-packages /opt/streamtrain
WORKDIR /opt/streamtrain
