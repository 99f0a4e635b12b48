// kafkajs driver for the pytest compatibility suite.
//   node kafkajs_client.js <command> <spec.json>
// The spec (written by pytest) holds the broker, topic and base64 records; the
// result is one JSON object on stdout. Any failure exits non-zero with the
// error on stderr.
'use strict';
const fs = require('fs');
const { Kafka, logLevel, CompressionTypes } = require('kafkajs');

const b64 = (s) => (s === null ? null : Buffer.from(s, 'base64'));
const enc = (b) => (b === null || b === undefined ? null : Buffer.from(b).toString('base64'));

function kafka(spec) {
  return new Kafka({
    clientId: 'strom-compat',
    brokers: [spec.bootstrap],
    logLevel: logLevel.ERROR,
    connectionTimeout: 10000,
    requestTimeout: 20000,
    retry: { retries: 5, initialRetryTime: 200 },
  });
}

const commands = {
  // Admin: create (again: expect false), metadata, offsets; produce acks=-1.
  async produce(spec) {
    const k = kafka(spec);
    const admin = k.admin();
    await admin.connect();
    const created = await admin.createTopics({
      waitForLeaders: true,
      topics: [{ topic: spec.topic, numPartitions: spec.partitions }],
    });
    const createdAgain = await admin.createTopics({
      topics: [{ topic: spec.topic, numPartitions: spec.partitions }],
    });
    const topics = await admin.listTopics();
    const md = await admin.fetchTopicMetadata({ topics: [spec.topic] });
    const producer = k.producer({ allowAutoTopicCreation: false });
    await producer.connect();
    const offsets = [];
    for (const batch of spec.batches) {
      const res = await producer.send({
        topic: spec.topic,
        acks: -1,
        compression: spec.gzip ? CompressionTypes.GZIP : CompressionTypes.None,
        messages: batch.map((m) => ({
          partition: m.partition,
          key: b64(m.key),
          value: b64(m.value),
          headers: Object.fromEntries(m.headers.map(([hk, hv]) => [hk, b64(hv)])),
          timestamp: m.timestamp === null ? undefined : String(m.timestamp),
        })),
      });
      offsets.push(res.map((r) => ({ partition: r.partition, baseOffset: Number(r.baseOffset), errorCode: r.errorCode })));
    }
    await producer.disconnect();
    const topicOffsets = await admin.fetchTopicOffsets(spec.topic);
    await admin.disconnect();
    return {
      created,
      createdAgain,
      listed: topics.includes(spec.topic),
      partitions: md.topics[0].partitions.map((p) => ({ id: p.partitionId, leader: p.leader, error: p.partitionErrorCode })).sort((a, b) => a.id - b.id),
      offsets,
      topicOffsets: topicOffsets.map((o) => ({ partition: o.partition, low: Number(o.low), high: Number(o.high) })).sort((a, b) => a.partition - b.partition),
    };
  },

  async deleteTopic(spec) {
    const admin = kafka(spec).admin();
    await admin.connect();
    await admin.deleteTopics({ topics: [spec.topic], timeout: 15000 });
    const deadline = Date.now() + 20000;
    let listed = true;
    while (Date.now() < deadline) {
      listed = (await admin.listTopics()).includes(spec.topic);
      if (!listed) break;
      await new Promise((r) => setTimeout(r, 200));
    }
    await admin.disconnect();
    return { listed };
  },

  // Group consumer: subscribe, read `count` records, commit, report them.
  async groupConsume(spec) {
    const k = kafka(spec);
    const consumer = k.consumer({ groupId: spec.group, sessionTimeout: 10000, rebalanceTimeout: 10000 });
    await consumer.connect();
    await consumer.subscribe({ topic: spec.topic, fromBeginning: true });
    const got = [];
    await new Promise((resolve, reject) => {
      const timer = setTimeout(() => reject(new Error(`only ${got.length} of ${spec.count} records`)), spec.timeoutMs);
      consumer
        .run({
          autoCommit: true,
          eachMessage: async ({ partition, message }) => {
            got.push({
              partition,
              offset: Number(message.offset),
              key: enc(message.key),
              value: enc(message.value),
            });
            if (got.length >= spec.count) {
              clearTimeout(timer);
              resolve();
            }
          },
        })
        .catch(reject);
    });
    await consumer.disconnect();
    const admin = k.admin();
    await admin.connect();
    const committed = await admin.fetchOffsets({ groupId: spec.group, topics: [spec.topic] });
    await admin.disconnect();
    return {
      records: got,
      committed: committed[0].partitions.map((p) => ({ partition: p.partition, offset: Number(p.offset) })),
    };
  },
};

async function main() {
  const [cmd, specPath] = process.argv.slice(2);
  const spec = JSON.parse(fs.readFileSync(specPath, 'utf8'));
  if (!commands[cmd]) throw new Error(`unknown command ${cmd}`);
  const out = await commands[cmd](spec);
  process.stdout.write(JSON.stringify(out) + '\n');
}

main().then(
  () => process.exit(0),
  (e) => {
    process.stderr.write(`kafkajs ${process.argv[2]} failed: ${e && e.stack ? e.stack : e}\n`);
    process.exit(1);
  },
);
