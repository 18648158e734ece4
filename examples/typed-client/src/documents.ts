// The operations this client sends. Each `graphql(...)` call is typed by
// graphql-codegen (npm run codegen): its result and variables types come from
// schema/schema.graphql, so a field the schema drops fails `tsc`.
import { graphql } from './gql/index.js';

export const SignUp = graphql(`
  mutation SignUp($email: String!, $password: String!) {
    signUp(email: $email, password: $password) {
      accessToken
      user {
        id
        email
        role
      }
    }
  }
`);

export const PostFields = graphql(`
  fragment PostFields on Post {
    id
    title
    published
    views
    rating
    createdAt
    authorId
  }
`);

export const ListPosts = graphql(`
  query ListPosts($where: PostWhere, $limit: Int) {
    posts(where: $where, orderBy: [{ field: CREATED_AT, direction: DESC }], limit: $limit) {
      ...PostFields
    }
    postsCount(where: $where)
  }
`);

export const CreatePost = graphql(`
  mutation CreatePost($input: PostCreateInput!) {
    createPost(input: $input) {
      ...PostFields
    }
  }
`);

export const PostChanged = graphql(`
  subscription PostChanged($where: PostWhere, $after: String) {
    postChanged(actions: [CREATE, UPDATE], where: $where, after: $after) {
      action
      id
      cursor
      at
      record {
        ...PostFields
      }
    }
  }
`);

export const Changes = graphql(`
  subscription Changes($collections: [String!]) {
    changes(collections: $collections) {
      collection
      action
      cursor
      at
    }
  }
`);
