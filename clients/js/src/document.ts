// Documents: accepting strings, DocumentNodes and codegen's typed documents,
// and preparing a subscription to resume from its last cursor.
import {
  Kind,
  parse,
  print,
  type ArgumentNode,
  type DocumentNode,
  type FieldNode,
  type OperationDefinitionNode,
  type SelectionNode,
  type VariableDefinitionNode,
} from 'graphql';
import type { DocumentTypeDecoration } from '@graphql-typed-document-node/core';

/**
 * A GraphQL document: a string, a DocumentNode (`gql`), or a typed document from
 * graphql-codegen (client preset, either document mode), which fixes the result
 * and variables types.
 */
export type Document<TData = Record<string, any>, TVariables = Record<string, unknown>> =
  | string
  | DocumentNode
  | DocumentTypeDecoration<TData, TVariables>;

/** The variable the client binds `after` to when the document does not. */
export const AFTER_VARIABLE = 'livegateAfter';
/** The alias under which the client selects the cursor when the document does not. */
export const CURSOR_ALIAS = 'livegateCursor';

/** The source text of a document. */
export function documentText(document: Document<unknown, unknown>): string {
  if (typeof document === 'string') return document;
  if (document instanceof String) return document.toString();
  if (isDocumentNode(document)) return document.loc?.source.body ?? print(document);
  // codegen's string mode: a String subclass (handled above); anything else prints as text.
  return String(document);
}

function isDocumentNode(value: unknown): value is DocumentNode {
  return typeof value === 'object' && value !== null && (value as { kind?: unknown }).kind === Kind.DOCUMENT;
}

function toNode(document: Document<unknown, unknown>): DocumentNode {
  return isDocumentNode(document) ? document : parse(documentText(document));
}

/** A subscription, ready to send, and how it resumes. */
export interface Prepared {
  /** The text to send. */
  query: string;
  operationName: string | undefined;
  /** Undefined when the subscription does not resume (no cursor to follow). */
  resume:
    | {
        /** The root field's response key (its alias, else its name). */
        rootKey: string;
        /** The key of the cursor within the root field's object. */
        cursorKey: string;
        /** Whether the client added the cursor (then it is removed from what the caller sees). */
        cursorAdded: boolean;
        /** The variable `after` is bound to. */
        afterVariable: string;
        /** Whether that variable is the caller's own (then its value is the first cursor). */
        callerVariable: boolean;
        /** An `after` written literally in the document: the first cursor. */
        literalAfter: string | undefined;
      }
    | undefined;
}

const cache = new WeakMap<object, Prepared>();
const textCache = new Map<string, Prepared>();

/**
 * Prepares a subscription document. It resumes when its single root field takes
 * `after`: the document passes `after`, or the field is one livegate generates
 * with it (`changes`, and `<type>Changed` for every collection), unless `resume`
 * is false. A resuming document gets `after` bound to a variable and `cursor`
 * selected if they were missing.
 */
export function prepareSubscription(document: Document<unknown, unknown>, resume: boolean | undefined): Prepared {
  const key = typeof document === 'string' ? undefined : (document as object);
  const memo = key !== undefined ? cache.get(key) : textCache.get(document as string);
  if (memo && resume === undefined) return memo;
  const prepared = prepare(toNode(document), resume);
  if (resume === undefined) {
    if (key !== undefined) cache.set(key, prepared);
    else {
      if (textCache.size > 500) textCache.clear();
      textCache.set(document as string, prepared);
    }
  }
  return prepared;
}

function prepare(doc: DocumentNode, resume: boolean | undefined): Prepared {
  const operations = doc.definitions.filter((d): d is OperationDefinitionNode => d.kind === Kind.OPERATION_DEFINITION);
  if (operations.length !== 1) {
    throw new Error(`expected a document with exactly one operation, got ${operations.length}`);
  }
  const op = operations[0]!;
  if (op.operation !== 'subscription') {
    throw new Error(`subscribe() takes a subscription, got a ${op.operation}; use request() for queries and mutations`);
  }
  const operationName = op.name?.value;
  const plain: Prepared = { query: printed(doc), operationName, resume: undefined };
  const roots = op.selectionSet.selections;
  const root = roots.length === 1 && roots[0]!.kind === Kind.FIELD ? roots[0] : undefined;
  if (resume === false || root === undefined) {
    if (resume === true) throw new Error('a subscription resumes only with a single root field (no fragment at the root)');
    return plain;
  }
  const afterArg = root.arguments?.find((a) => a.name.value === 'after');
  const name = root.name.value;
  const generated = name === 'changes' || /^[a-z][A-Za-z0-9_]*Changed$/.test(name);
  if (resume === undefined && afterArg === undefined && !generated) return plain;

  // Bind `after` to a variable.
  let afterVariable = AFTER_VARIABLE;
  let callerVariable = false;
  let literalAfter: string | undefined;
  let variableDefinitions: readonly VariableDefinitionNode[] = op.variableDefinitions ?? [];
  let args: readonly ArgumentNode[] = root.arguments ?? [];
  if (afterArg?.value.kind === Kind.VARIABLE) {
    afterVariable = afterArg.value.name.value;
    callerVariable = true;
  } else {
    if (afterArg?.value.kind === Kind.STRING) literalAfter = afterArg.value.value;
    const bound: ArgumentNode = {
      kind: Kind.ARGUMENT,
      name: { kind: Kind.NAME, value: 'after' },
      value: { kind: Kind.VARIABLE, name: { kind: Kind.NAME, value: AFTER_VARIABLE } },
    };
    args = [...args.filter((a) => a.name.value !== 'after'), bound];
    variableDefinitions = [
      ...variableDefinitions,
      {
        kind: Kind.VARIABLE_DEFINITION,
        variable: { kind: Kind.VARIABLE, name: { kind: Kind.NAME, value: AFTER_VARIABLE } },
        type: { kind: Kind.NAMED_TYPE, name: { kind: Kind.NAME, value: 'String' } },
      },
    ];
  }

  // Select the cursor: a plain `cursor` field the caller selected (aliased or
  // not, never under @skip/@include), else an aliased one of our own.
  const selections: readonly SelectionNode[] = root.selectionSet?.selections ?? [];
  const own = selections.find(
    (s): s is FieldNode => s.kind === Kind.FIELD && s.name.value === 'cursor' && (s.directives?.length ?? 0) === 0,
  );
  const cursorKey = own ? (own.alias?.value ?? 'cursor') : CURSOR_ALIAS;
  const added: FieldNode = {
    kind: Kind.FIELD,
    alias: { kind: Kind.NAME, value: CURSOR_ALIAS },
    name: { kind: Kind.NAME, value: 'cursor' },
  };
  const newRoot: FieldNode = {
    ...root,
    arguments: args,
    selectionSet: { kind: Kind.SELECTION_SET, selections: own ? selections : [...selections, added] },
  };
  const newOp: OperationDefinitionNode = {
    ...op,
    variableDefinitions,
    selectionSet: { ...op.selectionSet, selections: [newRoot] },
  };
  const newDoc: DocumentNode = { ...doc, definitions: doc.definitions.map((d) => (d === op ? newOp : d)) };
  return {
    query: printed(newDoc),
    operationName,
    resume: {
      rootKey: root.alias?.value ?? name,
      cursorKey,
      cursorAdded: own === undefined,
      afterVariable,
      callerVariable,
      literalAfter,
    },
  };
}

function printed(doc: DocumentNode): string {
  const { loc: _loc, ...rest } = doc;
  return print(rest as DocumentNode);
}
