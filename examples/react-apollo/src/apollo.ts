import { ApolloClient, ApolloLink, HttpLink, InMemoryCache } from '@apollo/client'
import { SetContextLink } from '@apollo/client/link/context'
import { GraphQLWsLink } from '@apollo/client/link/subscriptions'
import { OperationTypeNode } from 'graphql'
import { createClient } from 'graphql-ws'
import { accessToken, onSessionChange } from './session'

// Queries and mutations: HTTP POST to /graphql, with the token in a header.
const httpLink = new SetContextLink(async ({ headers }) => {
  const token = await accessToken()
  return { headers: { ...headers, ...(token ? { authorization: `Bearer ${token}` } : {}) } }
}).concat(new HttpLink({ uri: '/graphql' }))

// Subscriptions: one WebSocket (graphql-ws protocol) to the same /graphql.
const wsClient = createClient({
  url: `${location.protocol === 'https:' ? 'wss:' : 'ws:'}//${location.host}/graphql`,
  // Sent in connection_init each time the socket (re)connects.
  connectionParams: async () => {
    // Offline, a due refresh fails: wait and try again (an error thrown here
    // would end the subscriptions for good).
    for (;;) {
      try {
        const token = await accessToken()
        return token ? { token } : {}
      } catch {
        await new Promise((resolve) => setTimeout(resolve, 2000))
      }
    }
  },
  // Keep reconnecting: livegate closes the socket when the token expires (4403)
  // or when the client falls too far behind (1013); both are meant to be retried.
  retryAttempts: Infinity,
  shouldRetry: () => true,
})

// Reconnect with the new token when the user signs in or out.
onSessionChange(() => wsClient.terminate())

export const client = new ApolloClient({
  link: ApolloLink.split(
    (operation) => operation.operationType === OperationTypeNode.SUBSCRIPTION,
    new GraphQLWsLink(wsClient),
    httpLink,
  ),
  cache: new InMemoryCache(),
})

// Changes made while the socket was down are not replayed to a plain
// subscription: reload what is on screen after every reconnect.
wsClient.on('connected', (_socket, _payload, wasRetry) => {
  if (wasRetry) void client.refetchQueries({ include: 'active' })
})
