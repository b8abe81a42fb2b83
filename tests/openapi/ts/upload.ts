// A typed upload through openapi-fetch: compiled by tsc against the generated types, so that a
// document whose upload field is not a file (or whose answers are not these) fails to build.
import createClient from "openapi-fetch";
import type { components, paths } from "./generated/api.js";

export type TaskCreated = components["schemas"]["TaskCreated"];
export type ErrorOut = components["schemas"]["ErrorOut"];
type UploadForm =
  paths["/api/v1/detections"]["post"]["requestBody"]["content"]["multipart/form-data"];

export async function uploadPhoto(
  baseUrl: string,
  apiKey: string,
  photo: Blob,
  fileName: string,
): Promise<TaskCreated | ErrorOut> {
  const client = createClient<paths>({ baseUrl, headers: { Authorization: `Bearer ${apiKey}` } });
  // the operation takes a form or a raw image body: this call sends the form
  const upload: UploadForm = { file: photo };
  const answer = await client.POST("/api/v1/detections", {
    body: upload,
    bodySerializer(body) {
      const form = new FormData();
      form.append("file", (body as UploadForm).file, fileName);
      return form;
    },
  });
  if (answer.error !== undefined) {
    return answer.error;
  }
  return answer.data;
}
