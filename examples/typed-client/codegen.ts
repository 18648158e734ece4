// graphql-codegen configuration: TypeScript types and typed documents for the
// operations in src/, generated from the committed livegate schema.
//
//   npm run codegen      # writes src/gql/ (not committed: CI generates it every run)
import type { CodegenConfig } from '@graphql-codegen/cli';

const config: CodegenConfig = {
  // The SDL `livegate schema` prints for the example app, as committed.
  schema: '../../schema/schema.graphql',
  documents: [
    'src/**/*.ts',
    '!src/gql/**',
  ],
  generates: {
    'src/gql/': {
      preset: 'client',
      config: {
        // Every custom scalar must have a TypeScript type: a new one fails codegen
        // instead of quietly becoming `any`.
        strictScalars: true,
        scalars: { DateTime: 'string', JSON: 'unknown' },
        enumsAsTypes: true,
        useTypeImports: true,
      },
      presetConfig: {
        // No fragment masking: the example reads every field it selects directly.
        fragmentMasking: false,
        // Writes src/gql/persisted-documents.json (document hash -> text) and
        // puts each hash in its document (`__meta__.hash`): the client sends the
        // hash alone, and `livegate serve --persisted-documents ... --only-persisted`
        // runs these documents and nothing else.
        persistedDocuments: true,
      },
    },
  },
  ignoreNoDocuments: false,
};

export default config;
