// The API's TypeScript types from its OpenAPI document, as a browser or Node user makes them:
//   node generate.mjs openapi.json generated/api.ts
// A file field (`format: binary`) becomes a Blob, as openapi-fetch's docs advise for uploads.
import fs from "node:fs";
import path from "node:path";
import ts from "typescript";
import openapiTS, { astToString } from "openapi-typescript";

const [source, target] = process.argv.slice(2);
const BLOB = ts.factory.createTypeReferenceNode(ts.factory.createIdentifier("Blob"));
const ast = await openapiTS(JSON.parse(fs.readFileSync(source, "utf8")), {
  transform(schema) {
    if (schema.format === "binary") return BLOB;
    return undefined;
  },
});
fs.mkdirSync(path.dirname(target), { recursive: true });
fs.writeFileSync(target, astToString(ast));
