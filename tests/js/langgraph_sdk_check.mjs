// Drives the official LangGraph JS SDK (`@langchain/langgraph-sdk`, pinned in package.json)
// against a running Stubichat main_backend, at <url>/langgraph.
//
//   node tests/js/langgraph_sdk_check.mjs http://127.0.0.1:8000   (or STUBICHAT_URL=...)
//
// Three parts, each on its own thread (the caller scripts the upstream's answers in this
// order: a short one, a slow one, two long slow ones that get cancelled, a slow one):
//   stream      runs.stream with values + messages-tuple: metadata first, the chunks join to
//               the final AI message and share its id.
//   background  runs.create, joinStream from the start (Last-Event-ID -1), dropped after a few
//               chunks, rejoined after the last event id seen: nothing lost or repeated;
//               then threads.getState.
//   cancel      runs.cancel with wait=false (202) and wait=true (204).
//   reconnect   runs.stream (messages-tuple + updates) whose connection breaks mid-event:
//               the SDK reconnects by itself (its Location, Last-Event-ID) and the parts it
//               yields are the modes asked for, nothing lost or repeated.
// Prints one JSON summary on stdout ({ok, failures, ...}) and exits 1 if a check failed.
import { Client } from "@langchain/langgraph-sdk";

const baseUrl = (process.argv[2] ?? process.env.STUBICHAT_URL ?? "").replace(/\/$/, "");
if (!baseUrl) {
  console.error("usage: node langgraph_sdk_check.mjs <main_backend url>");
  process.exit(2);
}
const STREAM_MODE = ["values", "messages-tuple"];
const DROP_AFTER = 3; // messages chunks read before the background run's first join drops
const TOTAL_TIMEOUT_MS = Number(process.env.SDK_CHECK_TIMEOUT_MS ?? 90_000);

const summary = { ok: false, api_url: `${baseUrl}/langgraph`, failures: [], requests: [] };
let currentPart = "setup";

function check(condition, message, detail) {
  if (!condition) {
    const failure = { part: currentPart, message };
    if (detail !== undefined) failure.detail = detail;
    summary.failures.push(failure);
  }
  return Boolean(condition);
}

function finish(code) {
  summary.ok = code === 0 && summary.failures.length === 0;
  process.stdout.write(JSON.stringify(summary, null, 2) + "\n");
  process.exit(summary.ok ? 0 : code || 1);
}

const watchdog = setTimeout(() => {
  summary.failures.push({ part: currentPart, message: `timed out after ${TOTAL_TIMEOUT_MS} ms` });
  finish(1);
}, TOTAL_TIMEOUT_MS);

// Every HTTP exchange the SDK makes, as it made it: what it sent (method, path, query, the
// Last-Event-ID header) and what it got (status and the headers it reads).
async function recordingFetch(input, init) {
  const url = new URL(typeof input === "string" ? input : input.url);
  const headers = new Headers(init?.headers);
  const entry = {
    part: currentPart,
    method: init?.method ?? "GET",
    path: url.pathname,
    query: url.search,
    last_event_id: headers.get("last-event-id"),
  };
  summary.requests.push(entry);
  const response = await fetch(input, init);
  entry.status = response.status;
  entry.content_type = response.headers.get("content-type");
  entry.content_location = response.headers.get("content-location");
  entry.location = response.headers.get("location");
  if (cutNextRunStream !== null && entry.method === "POST" && url.pathname.endsWith("/runs/stream")) {
    const events = cutNextRunStream;
    cutNextRunStream = null;
    entry.cut_in_event = events;
    return cutInEvent(response, events);
  }
  return response;
}

// Part (d)'s network fault: the next POST …/runs/stream's body breaks in the middle of its
// `events`-th `messages` event, as a dropped connection does.
let cutNextRunStream = null;

function cutInEvent(response, events) {
  const marker = Buffer.from("event: messages");
  const reader = response.body.getReader();
  let received = Buffer.alloc(0);
  let passed = 0; // bytes of `received` passed on
  const body = new ReadableStream({
    async pull(controller) {
      const { done, value } = await reader.read();
      if (done) {
        controller.close();
        return;
      }
      received = Buffer.concat([received, value]);
      let at = -1;
      for (let i = 0; i < events; i += 1) {
        at = received.indexOf(marker, at + 1);
        if (at === -1) break;
      }
      if (at === -1) {
        controller.enqueue(new Uint8Array(received.subarray(passed)));
        passed = received.length;
        return;
      }
      controller.enqueue(new Uint8Array(received.subarray(passed, at + marker.length + 5)));
      await reader.cancel();
      controller.error(new TypeError("terminated: the test cut the connection"));
    },
    cancel(reason) {
      return reader.cancel(reason);
    },
  });
  return new Response(body, { status: response.status, headers: response.headers });
}

const client = new Client({
  apiUrl: `${baseUrl}/langgraph`,
  apiKey: null, // never read LANGSMITH_API_KEY & co. from the environment
  // No retries of failed requests: a 5xx must show, not be retried away.
  callerOptions: { maxRetries: 0, fetch: recordingFetch },
});

const human = (content) => ({ input: { messages: [{ type: "human", content }] } });
const lastOf = (items) => items[items.length - 1];
const plain = (part) => ({ id: part.id ?? null, event: part.event, data: part.data });

/** The `messages` parts' chunks joined, and the distinct ids of those chunks. */
function chunkText(parts) {
  const chunks = parts.filter((p) => p.event === "messages").map((p) => p.data[0]);
  return { text: chunks.map((c) => c.content).join(""), ids: [...new Set(chunks.map((c) => c.id))] };
}

/** The last AI message of the last `values` part. */
function finalAnswer(parts) {
  const values = parts.filter((p) => p.event === "values");
  const messages = lastOf(values)?.data?.messages ?? [];
  return lastOf(messages.filter((m) => m.type === "ai")) ?? null;
}

function checkMessagesParts(parts, threadId, runId) {
  for (const part of parts.filter((p) => p.event === "messages")) {
    const ok =
      check(Array.isArray(part.data) && part.data.length === 2, "a messages part is [chunk, metadata]", part.data) &&
      check(part.data[0]?.type === "AIMessageChunk", "the chunk is an AIMessageChunk", part.data[0]) &&
      check(typeof part.data[0]?.content === "string", "the chunk's content is text", part.data[0]) &&
      check(part.data[1]?.langgraph_node === "chat", "metadata.langgraph_node is chat", part.data[1]) &&
      check(part.data[1]?.run_id === runId, "metadata.run_id is the run's", part.data[1]) &&
      check(part.data[1]?.thread_id === threadId, "metadata.thread_id is the thread's", part.data[1]);
    if (!ok) return;
  }
}

function checkFinalState(state, threadId, answer, question) {
  const messages = state?.values?.messages ?? [];
  const last = lastOf(messages);
  check(messages.some((m) => m.type === "human" && m.content === question), "the state holds the question", messages);
  check(last?.type === "ai" && last?.id === answer?.id, "the state ends with the run's answer", { last, answer });
  check(last?.content === answer?.content, "the state's answer has the streamed text", { last, answer });
  check(Array.isArray(state?.next) && state.next.length === 0, "state.next is [] after an answer", state?.next);
  check(state?.checkpoint?.thread_id === threadId, "checkpoint.thread_id is the thread's", state?.checkpoint);
  check(state?.checkpoint?.checkpoint_id === last?.id, "checkpoint_id is the last message's id", state?.checkpoint);
}

// (a) --------------------------------------------------------------------------------------
async function streamPart() {
  currentPart = "stream";
  const question = "Hello from the JS SDK";
  const thread = await client.threads.create();
  const threadId = thread.thread_id;
  check(typeof threadId === "string" && threadId.length > 0, "threads.create gives a thread_id", thread);
  const created = [];
  const parts = [];
  for await (const part of client.runs.stream(threadId, "chat", {
    ...human(question),
    streamMode: STREAM_MODE,
    onRunCreated: (meta) => created.push(meta),
  })) {
    parts.push(plain(part));
  }
  const first = parts[0];
  const runId = first?.data?.run_id;
  check(first?.event === "metadata", "the first event is metadata", first);
  check(typeof runId === "string" && runId.length > 0, "metadata carries the run_id", first);
  check(
    created.length === 1 && created[0].run_id === runId && created[0].thread_id === threadId,
    "onRunCreated (from Content-Location) names the run and the thread",
    created,
  );
  const values = parts.filter((p) => p.event === "values");
  check(values.length >= 2, "values at the start and at the end", values.length);
  check(
    (values[0]?.data?.messages ?? []).some((m) => m.type === "human" && m.content === question),
    "the first values hold the question",
    values[0],
  );
  checkMessagesParts(parts, threadId, runId);
  const { text, ids } = chunkText(parts);
  const answer = finalAnswer(parts);
  check(answer !== null, "the last values end with an AI message", lastOf(values));
  check(text.length > 0 && text === answer?.content, "the chunks join to the final AI message", { text, answer });
  check(ids.length === 1 && ids[0] === answer?.id, "every chunk has the final AI message's id", { ids, answer });
  const unexpected = parts.filter((p) => !["metadata", "values", "messages", "end"].includes(p.event));
  check(unexpected.length === 0, "only metadata, values and messages events", unexpected);

  const run = await client.runs.get(threadId, runId);
  check(run.status === "success", "the run is a success", run);
  const state = await client.threads.getState(threadId);
  checkFinalState(state, threadId, answer, question);
  summary.stream = {
    thread_id: threadId,
    run_id: runId,
    events: parts.map((p) => p.event),
    ids: parts.map((p) => p.id),
    text,
    answer,
    state_messages: state?.values?.messages ?? null,
  };
}

// (b) --------------------------------------------------------------------------------------
async function readJoin(threadId, runId, lastEventId, most) {
  const controller = new AbortController();
  const parts = [];
  let chunks = 0;
  for await (const part of client.runs.joinStream(threadId, runId, {
    lastEventId,
    streamMode: STREAM_MODE,
    signal: controller.signal,
  })) {
    parts.push(plain(part));
    if (part.event === "messages") chunks += 1;
    if (most !== undefined && chunks >= most) break;
  }
  controller.abort(); // drop the connection now, not when the process ends
  return parts;
}

async function backgroundPart() {
  currentPart = "background";
  const question = "Tell me a long story";
  const thread = await client.threads.create();
  const threadId = thread.thread_id;
  const created = [];
  const run = await client.runs.create(threadId, "chat", {
    ...human(question),
    streamMode: STREAM_MODE,
    onRunCreated: (meta) => created.push(meta),
  });
  const runId = run?.run_id;
  check(typeof runId === "string" && run.thread_id === threadId, "runs.create gives the run", run);
  check(["pending", "running"].includes(run?.status), "a new run is pending or running", run);
  check(created.length === 1 && created[0].run_id === runId, "onRunCreated names the run", created);

  const first = await readJoin(threadId, runId, "-1", DROP_AFTER);
  const lastId = lastOf(first)?.id;
  check(first[0]?.event === "metadata" && first[0]?.data?.run_id === runId, "the join starts with metadata", first[0]);
  check(typeof lastId === "string" && lastId.length > 0, "the dropped join's last event has an id", lastOf(first));
  const during = await client.runs.get(threadId, runId);
  const rest = await readJoin(threadId, runId, lastId);
  const parts = [...first, ...rest];
  check(rest.length > 0, "the rejoin gets the rest", rest);
  check(!rest.some((p) => p.event === "metadata"), "the rejoin does not start over", rest[0]);
  checkMessagesParts(parts, threadId, runId);
  const { text, ids } = chunkText(parts);
  const answer = finalAnswer(parts);
  check(answer !== null, "the rejoined stream ends with values holding the answer", lastOf(rest));
  check(text === answer?.content, "dropped + rejoined chunks = the final answer exactly", { text, answer });
  check(ids.length === 1 && ids[0] === answer?.id, "every chunk has the final AI message's id", { ids, answer });
  const eventIds = parts.map((p) => p.id).filter((id) => id !== null);
  check(eventIds.length > 0, "the events have ids", parts);

  const ended = await client.runs.get(threadId, runId);
  check(ended.status === "success", "the run is a success", ended);
  const joined = await client.runs.join(threadId, runId);
  check(lastOf(joined?.messages ?? [])?.id === answer?.id, "runs.join gives the final values", joined);
  const state = await client.threads.getState(threadId);
  checkFinalState(state, threadId, answer, question);
  const threadAfter = await client.threads.get(threadId);
  check(threadAfter.status === "idle", "the thread is idle after the run", threadAfter);
  summary.background = {
    thread_id: threadId,
    run_id: runId,
    status_while_joined: during.status,
    first_join: { events: first.map((p) => p.event), ids: first.map((p) => p.id), text: chunkText(first).text },
    rejoin: { last_event_id: lastId, events: rest.map((p) => p.event), ids: rest.map((p) => p.id), text: chunkText(rest).text },
    text,
    answer,
    state_messages: state?.values?.messages ?? null,
    thread_status: threadAfter.status,
  };
}

// (c) --------------------------------------------------------------------------------------
async function startAndWaitForAChunk(threadId, question) {
  const run = await client.runs.create(threadId, "chat", human(question));
  await readJoin(threadId, run.run_id, "-1", 1);
  return run.run_id;
}

async function cancelPart() {
  currentPart = "cancel";
  const thread = await client.threads.create();
  const threadId = thread.thread_id;
  const result = { thread_id: threadId };

  const first = await startAndWaitForAChunk(threadId, "Cancel me without waiting");
  result.no_wait = await client.runs.cancel(threadId, first, false);
  check(result.no_wait === undefined, "cancel(wait=false) resolves to nothing (202)", result.no_wait);
  result.no_wait_joined = await client.runs.join(threadId, first);
  result.no_wait_status = (await client.runs.get(threadId, first)).status;
  check(result.no_wait_status === "interrupted", "a cancelled run is interrupted", result.no_wait_status);

  const second = await startAndWaitForAChunk(threadId, "Cancel me and wait");
  result.wait = await client.runs.cancel(threadId, second, true);
  check(result.wait === undefined, "cancel(wait=true) resolves to nothing (204)", result.wait);
  result.wait_status = (await client.runs.get(threadId, second)).status;
  check(result.wait_status === "interrupted", "cancel(wait=true) returns once the run ended", result.wait_status);
  result.thread_status = (await client.threads.get(threadId)).status;
  check(result.thread_status === "idle", "the thread is idle after the cancels", result.thread_status);
  result.run_ids = [first, second];
  summary.cancel = result;
}

// (d) --------------------------------------------------------------------------------------
async function reconnectPart() {
  currentPart = "reconnect";
  const question = "Keep going after a network fault";
  const thread = await client.threads.create();
  const threadId = thread.thread_id;
  const parts = [];
  cutNextRunStream = DROP_AFTER + 1;
  // runs.stream takes no onReconnect: the reconnects are the GETs it made of the stream.
  for await (const part of client.runs.stream(threadId, "chat", {
    ...human(question),
    streamMode: ["messages-tuple", "updates"],
  })) {
    parts.push(plain(part));
  }
  const runId = parts[0]?.data?.run_id;
  const reconnects = summary.requests.filter(
    (r) => r.part === currentPart && r.method === "GET" && r.path.endsWith("/stream"),
  );
  check(parts[0]?.event === "metadata", "the first event is metadata", parts[0]);
  check(reconnects.length === 1, "the SDK reconnected once, by itself", reconnects);
  check(reconnects[0]?.last_event_id === parts[DROP_AFTER]?.id, "after the last event it yielded", { reconnects, parts });
  const events = parts.map((p) => p.event);
  const asked = ["metadata", "messages", "updates", "end"];
  check(events.every((e) => asked.includes(e)), "after the reconnect: still only the modes asked for", events);
  check(events.filter((e) => e === "metadata").length === 1, "metadata once", events);
  const updates = parts.filter((p) => p.event === "updates");
  const answer = lastOf(updates)?.data?.chat?.messages?.[0] ?? null;
  check(updates.length === 1 && answer?.type === "ai", "one updates event with the answer", updates);
  checkMessagesParts(parts, threadId, runId);
  const { text, ids } = chunkText(parts);
  check(text === answer?.content, "chunks before + after the reconnect = the answer exactly", { text, answer });
  check(ids.length === 1 && ids[0] === answer?.id, "every chunk has the answer's id", { ids, answer });
  summary.reconnect = { thread_id: threadId, run_id: runId, events, ids: parts.map((p) => p.id), text, answer };
}

let code = 0;
for (const part of [streamPart, backgroundPart, cancelPart, reconnectPart]) {
  try {
    await part();
  } catch (error) {
    code = 1;
    summary.failures.push({ part: currentPart, message: `threw: ${error?.stack ?? error}` });
  }
}
clearTimeout(watchdog);
finish(code);
