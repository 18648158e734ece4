// Rooms: not in schema/schema.graphql yet, so codegen.ts and tsconfig.json leave
// this file out. Once the rooms issue lands, remove `!src/room.ts` from codegen.ts
// and `src/room.ts` from tsconfig.json's `exclude`: `npm run codegen` then types
// these documents like the others.
import { graphql } from './gql/index.js';

export const Room = graphql(`
  subscription Room($name: String!) {
    room(name: $name) {
      room
      kind
      payload
      at
      from {
        peerId
        userId
        email
      }
    }
  }
`);

export const SendToRoom = graphql(`
  mutation SendToRoom($room: String!, $kind: String!, $payload: JSON) {
    sendToRoom(room: $room, kind: $kind, payload: $payload)
  }
`);

export const RoomMembers = graphql(`
  query RoomMembers($room: String!) {
    roomMembers(room: $room) {
      peerId
      userId
      email
    }
  }
`);
