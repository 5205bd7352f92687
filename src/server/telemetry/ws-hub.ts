// Fan-out of monitor events to WebSocket subscribers (GET /v1/monitor/stream).
//
// Generation must never wait for a subscriber, so publish() is synchronous and never awaits a send.
// Each subscriber sends straight to its socket while the socket keeps up; once the socket's own
// buffer (bufferedAmount) passes a high-water mark, events wait in a bounded per-subscriber queue.
// When that queue is full the OLDEST event is dropped (a live monitor cares about now, not about a
// backlog), counted, and the subscriber receives one `dropped` {count} event in place of the gap as
// soon as its socket drains. Memory per subscriber is therefore bounded by the queue length plus the
// high-water mark, whatever the client does.

import type { IncomingMessage, Server } from 'node:http';
import type { Duplex } from 'node:stream';
import { WebSocket, WebSocketServer } from 'ws';
import { ApiError } from '../errors.ts';
import { refuseSocket, serveUpgradeAsRequest } from '../http-edge.ts';
import type { DroppedEvent, MonitorEvent } from './events.ts';

export const MONITOR_STREAM_PATH = '/v1/monitor/stream';

export interface SubscriberFilter {
  requestId?: string;
  model?: string;
}

export interface WsHubOptions {
  /** Events a subscriber may have queued before the oldest are dropped. */
  bufferSize: number;
  /** Socket bytes in flight above which events queue instead of being sent. */
  highWaterMarkBytes: number;
  /** Ping interval; a subscriber that missed the previous ping is disconnected. 0 disables. */
  heartbeatMs: number;
  onSubscriberCount(n: number): void;
  onDropped(n: number): void;
  now(): number;
  /** Subscriptions opened and closed, for the log (the subscriber count alone says nothing of who). */
  log?: (fields: object, msg: string) => void;
}

/** Fixed-capacity FIFO; pushing onto a full queue evicts the oldest element. */
class RingQueue<T> {
  private readonly items: (T | undefined)[];
  private head = 0;
  private count = 0;

  constructor(readonly capacity: number) {
    this.items = new Array<T | undefined>(capacity);
  }

  get length(): number {
    return this.count;
  }

  /** Returns true when an old element had to be evicted to make room. */
  push(item: T): boolean {
    const evicted = this.count === this.capacity;
    if (evicted) this.shift();
    this.items[(this.head + this.count) % this.capacity] = item;
    this.count++;
    return evicted;
  }

  shift(): T | undefined {
    if (this.count === 0) return undefined;
    const item = this.items[this.head];
    this.items[this.head] = undefined;
    this.head = (this.head + 1) % this.capacity;
    this.count--;
    return item;
  }

  clear(): void {
    this.items.fill(undefined);
    this.head = 0;
    this.count = 0;
  }
}

export function eventMatches(ev: MonitorEvent, f: SubscriberFilter): boolean {
  if (f.model !== undefined && ev.model !== f.model) return false;
  if (f.requestId === undefined) return true;
  // A global intervention (no request id) acts on every request, so a per-request view shows it too.
  if (ev.type === 'intervention')
    return ev.intervention.request_id === null || ev.intervention.request_id === f.requestId;
  return ev.request_id === f.requestId;
}

class Subscriber {
  private readonly queue: RingQueue<string>;
  private droppedSinceNotice = 0;
  alive = true;

  constructor(
    readonly socket: WebSocket,
    readonly filter: SubscriberFilter,
    private readonly opts: WsHubOptions,
  ) {
    this.queue = new RingQueue(opts.bufferSize);
  }

  /** Queues one serialized event and sends whatever the socket can take now. Never blocks. */
  offer(data: string): void {
    // A closing socket gets nothing more; its 'close' handler is about to remove it.
    if (this.socket.readyState !== WebSocket.OPEN) return;
    if (this.queue.push(data)) {
      this.droppedSinceNotice++;
      this.opts.onDropped(1);
    }
    this.flush();
  }

  /** Sends queued events while the socket is below its high-water mark. */
  flush = (): void => {
    const ws = this.socket;
    while (
      this.queue.length > 0 &&
      ws.readyState === WebSocket.OPEN &&
      ws.bufferedAmount <= this.opts.highWaterMarkBytes
    ) {
      if (this.droppedSinceNotice > 0) {
        const notice: DroppedEvent = { type: 'dropped', count: this.droppedSinceNotice, ts: this.opts.now() };
        this.droppedSinceNotice = 0;
        ws.send(JSON.stringify(notice));
      }
      // Every completed write is a chance to send more: the queue drains as the socket drains.
      ws.send(this.queue.shift()!, this.afterSend);
    }
  };

  private readonly afterSend = (err?: Error): void => {
    if (!err && this.queue.length > 0) this.flush();
  };

  discard(): void {
    this.queue.clear();
  }
}

function parseFilter(url: URL): SubscriberFilter {
  const f: SubscriberFilter = {};
  const requestId = url.searchParams.get('request_id');
  const model = url.searchParams.get('model');
  if (requestId) f.requestId = requestId;
  if (model) f.model = model;
  return f;
}

export class WsHub {
  private readonly wss = new WebSocketServer({ noServer: true, perMessageDeflate: false, maxPayload: 4096 });
  private nextSubscriber = 1;
  private readonly subscribers = new Set<Subscriber>();
  private readonly attached: {
    server: Server;
    listener: (req: IncomingMessage, socket: Duplex, head: Buffer) => void;
  }[] = [];
  private heartbeat: NodeJS.Timeout | null = null;

  constructor(private readonly opts: WsHubOptions) {
    if (opts.bufferSize < 1 || !Number.isInteger(opts.bufferSize)) {
      throw new RangeError(`WebSocket buffer size must be a positive integer, got ${opts.bufferSize}`);
    }
    // Handshakes ws refuses (bad key, version, method) answer in the error shape, not ws's plain text.
    this.wss.on('wsClientError', (err: Error, socket: Duplex) => {
      const e =
        err.message === 'Invalid HTTP method'
          ? new ApiError('method_not_allowed', 'The monitor stream accepts only GET.')
          : new ApiError('invalid_websocket_handshake', `WebSocket handshake refused: ${err.message}.`);
      refuseSocket(socket, e);
    });
  }

  get subscriberCount(): number {
    return this.subscribers.size;
  }

  attach(server: Server, authorize?: (req: IncomingMessage) => boolean): void {
    const listener = (req: IncomingMessage, socket: Duplex, head: Buffer): void => {
      const url = new URL(req.url ?? '/', 'http://localhost');
      if (url.pathname !== MONITOR_STREAM_PATH) {
        // Leave other paths to other upgrade handlers, if the server has any; alone, serve them
        // as the plain HTTP requests they also are.
        if (server.listenerCount('upgrade') === 1) serveUpgradeAsRequest(server, req, socket, head);
        return;
      }
      let allowed = true;
      try {
        allowed = authorize ? authorize(req) : true;
      } catch {
        // An exception in an 'upgrade' listener would take the process down; refuse instead.
        allowed = false;
      }
      if (!allowed) {
        this.opts.log?.(
          { path: url.pathname, remote: req.socket.remoteAddress },
          'monitor subscription refused',
        );
        refuseSocket(
          socket,
          new ApiError(
            'invalid_api_key',
            'Missing or incorrect admin token: send "Authorization: Bearer <token>" or ?token=.',
          ),
        );
        return;
      }
      this.wss.handleUpgrade(req, socket, head, (ws) =>
        this.add(ws, parseFilter(url), req.socket.remoteAddress ?? null),
      );
    };
    server.on('upgrade', listener);
    this.attached.push({ server, listener });
    if (this.opts.heartbeatMs > 0 && !this.heartbeat) {
      this.heartbeat = setInterval(() => this.checkAlive(), this.opts.heartbeatMs);
      this.heartbeat.unref();
    }
  }

  /** Sends an event to every matching subscriber. Synchronous; serializes at most once. */
  publish(ev: MonitorEvent): void {
    if (this.subscribers.size === 0) return;
    let data: string | null = null;
    for (const sub of this.subscribers) {
      if (!eventMatches(ev, sub.filter)) continue;
      data ??= JSON.stringify(ev);
      sub.offer(data);
    }
  }

  async close(): Promise<void> {
    if (this.heartbeat) clearInterval(this.heartbeat);
    this.heartbeat = null;
    for (const { server, listener } of this.attached) server.off('upgrade', listener);
    this.attached.length = 0;
    const closed = [...this.subscribers].map(
      (sub) =>
        new Promise<void>((resolve) => {
          if (sub.socket.readyState === WebSocket.CLOSED) return resolve();
          sub.socket.once('close', () => resolve());
          sub.socket.close(1001, 'server shutting down');
          // A client that never answers the close frame must not hold up shutdown.
          setTimeout(() => {
            sub.socket.terminate();
            resolve();
          }, 1000).unref();
        }),
    );
    await Promise.all(closed);
    await new Promise<void>((resolve) => this.wss.close(() => resolve()));
  }

  private add(ws: WebSocket, filter: SubscriberFilter, remote: string | null): void {
    const sub = new Subscriber(ws, filter, this.opts);
    const subscriber = this.nextSubscriber++;
    const opened = this.opts.now();
    this.subscribers.add(sub);
    this.opts.onSubscriberCount(this.subscribers.size);
    this.opts.log?.(
      { subscriber, remote, filter, subscribers: this.subscribers.size },
      'monitor subscription opened',
    );
    ws.on('pong', () => {
      sub.alive = true;
    });
    // Socket errors (a reset client) end the subscription; they are not the server's errors.
    ws.on('error', () => ws.terminate());
    ws.on('close', (code: number) => {
      sub.discard();
      if (this.subscribers.delete(sub)) this.opts.onSubscriberCount(this.subscribers.size);
      this.opts.log?.(
        { subscriber, code, duration_ms: this.opts.now() - opened, subscribers: this.subscribers.size },
        'monitor subscription closed',
      );
    });
  }

  private checkAlive(): void {
    for (const sub of this.subscribers) {
      if (!sub.alive) {
        sub.socket.terminate();
        continue;
      }
      sub.alive = false;
      sub.socket.ping();
    }
  }
}
