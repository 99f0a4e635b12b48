// @kafkajs/confluent-schema-registry with kafkajs, driven by
// test_schema_registry.py:
//   node schema_registry_client.js <spec.json>
// Registers an Avro schema under `<topic>-value` (twice, from two registry
// clients), encodes the spec's records with it, produces them with kafkajs,
// and decodes the encoded buffers with a third registry client (which
// fetches the schema by id). Prints one JSON object; a failure exits
// non-zero with the error on stderr.
'use strict';
const fs = require('fs');
const { Kafka, logLevel } = require('kafkajs');
const { SchemaRegistry, SchemaType } = require('@kafkajs/confluent-schema-registry');

async function main(spec) {
  const subject = `${spec.topic}-value`;
  const schema = { type: SchemaType.AVRO, schema: JSON.stringify(spec.schema) };
  const { id } = await new SchemaRegistry({ host: spec.registry }).register(schema, { subject });
  const again = await new SchemaRegistry({ host: spec.registry }).register(schema, { subject });

  const registry = new SchemaRegistry({ host: spec.registry });
  const values = [];
  for (const record of spec.records) {
    values.push(await registry.encode(id, record));
  }
  const kafka = new Kafka({
    clientId: 'strom-compat-registry',
    brokers: [spec.bootstrap],
    logLevel: logLevel.ERROR,
    retry: { retries: 5, initialRetryTime: 200 },
  });
  const producer = kafka.producer();
  await producer.connect();
  await producer.send({ topic: spec.topic, acks: -1, messages: values.map((value) => ({ value })) });
  await producer.disconnect();

  const reader = new SchemaRegistry({ host: spec.registry });
  const decoded = [];
  for (const value of values) {
    decoded.push(await reader.decode(value));
  }
  return { id, idAgain: again.id, decoded };
}

main(JSON.parse(fs.readFileSync(process.argv[2], 'utf8')))
  .then((out) => process.stdout.write(JSON.stringify(out)))
  .catch((e) => {
    process.stderr.write(`${e.stack || e}\n`);
    process.exit(1);
  });
