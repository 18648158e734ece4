// A small EventSource reader over fetch (browsers and Node 18+ alike), so a
// reconnect can name `Last-Event-ID` and a fresh token itself.

/** One dispatched server-sent event. */
export interface ServerSentEvent {
  event: string;
  data: string;
  /** The last event id after this event (`id:` of this event or an earlier one). */
  id: string | undefined;
}

/**
 * Reads `body` as text/event-stream until it ends, calling `onEvent` for each
 * dispatched event; `lastId` is the id to start from (as EventSource keeps it
 * across events). Resolves with the id as of the last dispatched event when the
 * stream ends.
 */
export async function readEventStream(
  body: ReadableStream<Uint8Array>,
  lastId: string | undefined,
  onEvent: (event: ServerSentEvent) => void,
): Promise<string | undefined> {
  const reader = body.getReader();
  const decoder = new TextDecoder();
  let buffer = '';
  let data: string[] = [];
  let event = '';
  let id = lastId;
  /** The id as of the last blank line: only a dispatched event counts as received. */
  let dispatched = lastId;
  let first = true;

  const line = (text: string) => {
    if (text === '') {
      dispatched = id;
      if (data.length > 0) onEvent({ event: event || 'message', data: data.join('\n'), id });
      data = [];
      event = '';
      return;
    }
    if (text.startsWith(':')) return; // a comment (heartbeat)
    const colon = text.indexOf(':');
    const field = colon === -1 ? text : text.slice(0, colon);
    let value = colon === -1 ? '' : text.slice(colon + 1);
    if (value.startsWith(' ')) value = value.slice(1);
    if (field === 'data') data.push(value);
    else if (field === 'event') event = value;
    else if (field === 'id' && !value.includes('\0')) id = value;
    // `retry` and unknown fields: ignored (reconnects follow the client's backoff).
  };

  try {
    for (;;) {
      const { done, value } = await reader.read();
      if (done) break;
      buffer += decoder.decode(value, { stream: true });
      if (first && buffer.length > 0) {
        if (buffer.charCodeAt(0) === 0xfeff) buffer = buffer.slice(1);
        first = false;
      }
      let start = 0;
      for (let i = 0; i < buffer.length; i += 1) {
        const c = buffer[i];
        if (c !== '\n' && c !== '\r') continue;
        if (c === '\r' && i + 1 === buffer.length) break; // maybe \r\n split across chunks
        line(buffer.slice(start, i));
        if (c === '\r' && buffer[i + 1] === '\n') i += 1;
        start = i + 1;
      }
      buffer = buffer.slice(start);
    }
  } finally {
    reader.releaseLock();
  }
  // An event not ended by a blank line is discarded, as EventSource does.
  return dispatched;
}
