export {
  createClient,
  type ClientOptions,
  type LivegateClient,
  type Result,
  type Sink,
  type SubscribeOptions,
  type Unsubscribe,
  type LiveChange,
  type LiveOptions,
  type Room,
  type RoomOptions,
  type RoomEvent,
  type RoomMember,
  type Presence,
  type RequestOptions,
  type TokenSource,
} from './client.js';
export { GraphQLResponseError, LivegateError } from './errors.js';
export { jwtTimes } from './tokens.js';
export type { Document } from './document.js';
