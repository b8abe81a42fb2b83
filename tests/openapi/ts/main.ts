// node dist/main.js API_URL API_KEY PHOTO: uploads the photo and writes the typed answer as JSON.
import { readFileSync } from "node:fs";
import { uploadPhoto } from "./upload.js";

const [baseUrl = "", apiKey = "", photoPath = ""] = process.argv.slice(2);
const photo = new Blob([readFileSync(photoPath)], { type: "image/jpeg" });
const answer = await uploadPhoto(baseUrl, apiKey, photo, "photo.jpg");
process.stdout.write(JSON.stringify(answer));
