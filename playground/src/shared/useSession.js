// React binding of the session store: re-renders on sign-in, sign-out and refresh.

import { useSyncExternalStore } from 'react';

import { currentSession, onSessionChange } from './session.js';

/** The current session (null when anonymous), kept up to date. */
export function useSession() {
  return useSyncExternalStore(onSessionChange, currentSession);
}
