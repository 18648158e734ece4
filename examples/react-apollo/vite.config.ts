import react from '@vitejs/plugin-react'
import { defineConfig } from 'vite'

// The dev server forwards /graphql (HTTP and WebSocket) to livegate, so the
// browser sees one origin and livegate needs no CORS setting.
export default defineConfig({
  plugins: [react()],
  server: {
    proxy: {
      '/graphql': { target: 'http://localhost:4000', ws: true },
    },
  },
})
