// graphql-codegen for the tests: typed documents for test/documents.ts from the
// committed schema of the example app (the way an application would use it).
//
//   npm run codegen      # writes test/gql/ (not committed)
import type { CodegenConfig } from '@graphql-codegen/cli';

const config: CodegenConfig = {
  schema: '../../schema/schema.graphql',
  documents: ['test/documents.ts'],
  generates: {
    'test/gql/': {
      preset: 'client',
      config: {
        strictScalars: true,
        scalars: { DateTime: 'string', JSON: 'unknown' },
        enumsAsTypes: true,
        useTypeImports: true,
      },
      presetConfig: { fragmentMasking: false },
    },
  },
  ignoreNoDocuments: false,
  // Imports with .js extensions, so tsc's output runs on Node as ESM.
  emitLegacyCommonJSImports: false,
};

export default config;
