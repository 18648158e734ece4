// Rooms: joining (a subscription), sending, and the roster, as typed documents.
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
